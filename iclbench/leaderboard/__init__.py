"""The leaderboard: the ranking rule (`ranking`), the build and its command (`build`), the page
(`page`), its plots (`plots`) and the findings page (`findings`)."""
