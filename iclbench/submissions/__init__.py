"""Submissions: the folder's schema and `iclbench validate` (`schema`), the re-run and its tolerances
(`rerun`), fresh-draw verification (`verify`) and its statistics (`rank_test`), and the pull-request
scope check (`pr_check`)."""
