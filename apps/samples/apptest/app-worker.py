from elves.apps.sdk.worker import main

main()
