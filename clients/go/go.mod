module leasekeeper.dev/client

go 1.19
