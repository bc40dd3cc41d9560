-- Drop index rows of files that are no longer in the archive. Their scores stay.
DELETE FROM instances WHERE path NOT IN (SELECT path FROM listing);
