-- Who cancelled or deleted an appointment in the calendar (the event's cancelled_by or
-- deleted_by): the unlink it causes names them, so the line's history says who released it.
ALTER TABLE appointments ADD COLUMN ended_by text;
