"""The place: where a search is kept.

It owns the storage (a local folder, a shared mount or S3 through pyarrow.fs and boto3, with the
local mirror of an S3 search), Ray Tune's experiment folder (the one reader of its result files and
experiment state, and the files tune-run keeps beside them) and the cluster probes that every node
sees that storage. No other package reads Ray's experiment folder or talks to S3.
"""
