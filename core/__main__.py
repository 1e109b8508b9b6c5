from dcmpipe.cli import main

main()
