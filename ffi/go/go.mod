module floodwall.dev/floodwall

go 1.19
