import ArgumentParser

GDH.main()
