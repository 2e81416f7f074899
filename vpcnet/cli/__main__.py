from vpcnet.cli.entry import main

main()
