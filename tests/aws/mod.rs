//! AWS: the SQS, S3 and EC2 adapters on the official SDK against a real moto server, the whole
//! service end to end on it (EC2 instances played by `skyburst dev fleet-agent`), faults made
//! by freezing the server, and the IAM policies checked against the calls the code makes.

mod adapters;
mod admin;
mod end_to_end;
mod faults;
mod iam;
mod startup;
