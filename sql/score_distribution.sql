-- Scores by the month they were made, per model: the drift a program watches.
SELECT model_id, strftime(scored_at, '%Y-%m') AS month, count(*) AS n,
       quantile_cont(score, 0.1) AS p10, quantile_cont(score, 0.5) AS p50, quantile_cont(score, 0.9) AS p90,
       avg(score) AS mean
FROM scores
GROUP BY ALL
ORDER BY model_id, month;
