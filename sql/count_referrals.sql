SELECT count(*) FROM referrals;
