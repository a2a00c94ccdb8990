"""mlops"""
