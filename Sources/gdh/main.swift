print("gdh")
