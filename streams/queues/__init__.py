"""streams/queues"""
