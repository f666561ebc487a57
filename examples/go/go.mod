module leasekeeper.example/app

go 1.19

require leasekeeper.dev/client v0.0.0

replace leasekeeper.dev/client => ../../clients/go
