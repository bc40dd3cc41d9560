-- How many images have a result of $model_id stored on $destination.
SELECT count(*) FROM results_sent WHERE model_id = $model_id AND destination = $destination;
