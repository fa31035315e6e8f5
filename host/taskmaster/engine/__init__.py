"""The job engine on SAQ: queue, worker, job records and their history."""
