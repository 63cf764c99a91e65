// The GDH trainer.
