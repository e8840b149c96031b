"""videossl.eval"""
