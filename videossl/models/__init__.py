"""videossl.models"""
