"""videossl.data"""
