"""apps/sdk"""
