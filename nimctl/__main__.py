from nimctl.cli.main import main

main()
