from edge_dm.cli import main

main(prog_name="edge-dm")
