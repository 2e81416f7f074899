from vpcnet.cli.main import main

main()
