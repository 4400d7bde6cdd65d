from bench.fleet_bench import main

main()
