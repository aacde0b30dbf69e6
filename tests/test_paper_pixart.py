"""configs/paper-pixart.yaml rehearsed end to end, 00 -> 08, on a tiny pipeline of its model's shape (see
tests/paper_rehearsal.py). One file per config, so that `make test`'s two workers run the two at once."""
from paper_rehearsal import rehearse


# The whole chain, 11 notebooks, at the config's image size (about 2 minutes alone on 2 cores): the
# only test of this paper config end to end.
def test_paper_pixart_runs_the_whole_chain_on_a_tiny_pipeline_of_its_shape(tmp_path):
    rehearse("paper-pixart", tmp_path)
