"""``python -m imagetomesh.backend --worker``: serve ImageToMesh jobs on stdin/stdout (:func:`worker_main`)."""

import sys

from imagetomesh.backend.serve import worker_main

if "--worker" in sys.argv[1:]:
    sys.exit(worker_main())
print("usage: python -m imagetomesh.backend --worker   (serves ImageToMesh jobs on stdin/stdout)", file=sys.stderr)
sys.exit(2)
