from fastnst.cli import main

main()
