"""What every room of the node leans on and that belongs to none of them: backoff schedules,
stage timing, private files, and the fault suite's failpoints."""
