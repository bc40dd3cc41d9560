-- What the selection rules look at, for every readable file.
SELECT path, header, age FROM instances WHERE read_reason IS NULL;
