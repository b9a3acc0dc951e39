"""Hand-written fakes of the cloud services `ferry deploy` talks to (gcloud, Cloud Scheduler, Firestore admin)."""
