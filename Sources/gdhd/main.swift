print("gdhd")
