"""The detector maths: bars, rolling correlations, co-selling, liquidation cascades, funding stress.

Pure code: numpy and the standard library only. No Kafka, no clock, no logging; time is always
passed in as an argument (nanoseconds since the Unix epoch, UTC).
"""
