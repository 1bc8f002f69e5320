"""streams/tasks"""
