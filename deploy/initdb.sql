-- Three databases with separate credentials, as in a hospital deployment: the auth
-- database (users, API tokens), the patient database (demographics: names,
-- identifiers, birth dates) and the clinical database (documents, audit log, with
-- pseudonymous patient ids only). A leaked credential of one reads none of the
-- others: the clinical one names nobody, the patient one holds no document.
--
-- The postgres image runs this once, when its data volume is first initialised.
-- Passwords come from the environment (see deploy/.env.example); \getenv needs psql 15+.
-- The database names and roles here must match MEDVAULT_DATABASE_URL,
-- MEDVAULT_AUTH_DATABASE_URL and MEDVAULT_PATIENT_DATABASE_URL in deploy/compose.yml.
-- A volume initialised before the patient database existed has no medvault_patients:
-- run the three statements for it below by hand (psql as postgres), then migrate.

\set ON_ERROR_STOP on
\getenv clinical_password MEDVAULT_CLINICAL_DB_PASSWORD
\getenv auth_password MEDVAULT_AUTH_DB_PASSWORD
\getenv patients_password MEDVAULT_PATIENT_DB_PASSWORD

CREATE ROLE medvault_clinical LOGIN PASSWORD :'clinical_password';
CREATE ROLE medvault_auth LOGIN PASSWORD :'auth_password';
CREATE ROLE medvault_patients LOGIN PASSWORD :'patients_password';

-- Each role owns its database, so `medvault migrate` can create the tables in it.
CREATE DATABASE medvault_clinical OWNER medvault_clinical;
CREATE DATABASE medvault_auth OWNER medvault_auth;
CREATE DATABASE medvault_patients OWNER medvault_patients;

-- Nobody else may connect (PUBLIC has CONNECT by default).
REVOKE ALL ON DATABASE medvault_clinical FROM PUBLIC;
REVOKE ALL ON DATABASE medvault_auth FROM PUBLIC;
REVOKE ALL ON DATABASE medvault_patients FROM PUBLIC;
