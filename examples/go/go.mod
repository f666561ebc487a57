module leasekeeper.example/app

go 1.19
