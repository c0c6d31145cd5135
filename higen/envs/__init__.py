"""Gymnasium environments for the hierarchy: ``low`` (``CompilerFuzzEnv``: one step = one test)
and ``high`` (``HighLevelEnv``: one step = one big epoch, choosing the free dimensions). Both observe
and book into the campaign state every strategy shares (``higen.campaign_state``); actions become
configs through ``higen.generation.decoder``. Import the submodules; this package imports nothing heavy.
"""
