-- Two databases with separate credentials, as in a hospital deployment: the auth
-- database (API tokens) and the clinical database (patients, documents, audit log).
-- A leaked clinical credential cannot read token hashes, and the reverse.
--
-- The postgres image runs this once, when its data volume is first initialised.
-- Passwords come from the environment (see deploy/.env.example); \getenv needs psql 15+.
-- The database names and roles here must match MEDVAULT_DATABASE_URL and
-- MEDVAULT_AUTH_DATABASE_URL in deploy/compose.yml.

\set ON_ERROR_STOP on
\getenv clinical_password MEDVAULT_CLINICAL_DB_PASSWORD
\getenv auth_password MEDVAULT_AUTH_DB_PASSWORD

CREATE ROLE medvault_clinical LOGIN PASSWORD :'clinical_password';
CREATE ROLE medvault_auth LOGIN PASSWORD :'auth_password';

-- Each role owns its database, so `medvault migrate` can create the tables in it.
CREATE DATABASE medvault_clinical OWNER medvault_clinical;
CREATE DATABASE medvault_auth OWNER medvault_auth;

-- Nobody else may connect (PUBLIC has CONNECT by default).
REVOKE ALL ON DATABASE medvault_clinical FROM PUBLIC;
REVOKE ALL ON DATABASE medvault_auth FROM PUBLIC;
