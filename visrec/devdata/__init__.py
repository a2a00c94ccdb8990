"""devdata"""
