module quench.test/testsvc

go 1.19
