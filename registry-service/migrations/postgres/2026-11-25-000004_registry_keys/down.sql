DROP TABLE registry_keys;
