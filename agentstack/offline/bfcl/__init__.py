"""Berkeley Function Calling Leaderboard data and checker, used to train and prove the tool roles."""
