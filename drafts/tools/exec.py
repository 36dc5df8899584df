"""Execute notebooks in place with nbclient (1 thread), print cell times. ALLOW_ERRORS=1 keeps going."""
import os, sys, time, nbformat
from nbclient import NotebookClient
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    t = time.time()
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=os.environ.get("ALLOW_ERRORS") == "1",
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, path)
    print(f"{path}: {time.time() - t:.1f} s")
    for c in nb.cells:
        if c.cell_type == "code":
            for o in c.get("outputs", []):
                if o.get("output_type") == "error":
                    print("ERROR in cell", c["id"], o["ename"], o["evalue"][:500])
