"""What the tests share: child-process harness, fake Stocktwits server, data paths, tools."""
