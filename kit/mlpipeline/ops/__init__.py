"""Operations around the pipeline: the serving image, the team stack, the pull-request report.
Neither the pipeline nor the service imports anything here."""
