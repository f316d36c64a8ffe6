DROP TABLE holding_periods;
