-- Nothing to undo: 000008's down drops the table.
SELECT 1;
