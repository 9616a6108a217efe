"""A/B experiments. Today only the assignment hook the for-you feed calls
(:mod:`~experiments.assignment`): everyone is in control and served by the champions.
"""
