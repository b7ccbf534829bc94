"""``python train.py {fit,validate,test,predict,mine,demo,check-data,bm25,fuse,reproduce,verbalize} --config ...``.

``python train.py --help`` lists the subcommands, ``python train.py SUBCOMMAND --help`` their options; see
``commands/cli.py``.
"""

import sys

from commands.cli import main

if __name__ == "__main__":
    sys.exit(main())
