"""videossl.methods"""
