"""Redis scheduler: keys, queue, placement policies, dispatcher, worker."""
