from flmjax.cli.bench_dpo import main

if __name__ == "__main__":
    raise SystemExit(main())
