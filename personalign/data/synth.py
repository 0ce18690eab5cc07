"""Synthetic preference data with a real, user-dependent learning signal.

`synth_records` draws one latent user per record: a sparse direction vector (most of the 90
dimensions at 0.5, a handful at 0 or 1, each side equally likely). The record's `Preference
Direction` is the user's vector; every history item carries a noisy copy of it, so the PBA rule
recovers the user's preferences. Every reply (target pair, past pairs) realizes a few of the
active dimensions as text (a sentence from `STYLE`, or structure: concise vs detailed, numbered
list vs paragraph); the chosen reply takes the user's side and the rejected one the opposite side.
Because each side is the preferred one for half the users, the text of a reply alone does not
predict which one was chosen: only the user's history does.

`synth_ranking` makes ranking records (prompt, `responses` best-first, descending `rewards`).
All output is deterministic in the seed; texts come from precomputed banks, so generation is fast.
"""
from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from personalign.data.dimensions import Dimension, load_dimensions
from personalign.data.schema import DEMOGRAPHIC, DIRECTION, N_DIMENSIONS, PAIRS, UGC

CONCISE, ORDER = 16, 23  # dimensions also realized through structure: reply length, numbered list

# dimension -> (sentences for value 1, sentences for value 0); an empty side means "not mentioned".
STYLE: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    0: (("If you're still at school or just starting out, this is a great time to build the habit.",),
        ("With a few decades of experience behind you, you already know a lot about what works for you.",)),
    1: (("Plenty of women I've talked to found this approach helpful.",),
        ("Plenty of men I've talked to found this approach helpful.",)),
    2: (("Don't worry if it feels overwhelming at first; that's completely normal, and you can go slowly.",),
        ("No need to overthink it; just start and adjust as you go.",)),
    3: (("Grab a friend and do it together, it's so much more fun with company!",),
        ("You can do this quietly on your own, at your own pace.",)),
    4: (("Feel free to experiment and try an unconventional approach.",),
        ("Stick with the tried-and-tested approach; it works for most people.",)),
    5: (("Be kind to yourself, and to anyone else who is trying the same thing.",),
        ("Frankly, excuses won't help here; results will.",)),
    6: (("Set a specific plan, put it in your calendar, and review your progress every Sunday.",),
        ("Don't stress about a strict plan; do what feels right on the day.",)),
    7: (("Reward yourself with your favourite snack when you're done.",),
        ("Skip the food rewards and pick a non-food treat instead.",)),
    8: (("Set up a corner at home that feels calm and comfortable for this.",),
        ("You don't need a special space for this; any spot will do.",)),
    9: (("And don't sacrifice sleep for it: a well-rested brain does much better work.",),
        ("If you're an early riser, put those quiet morning hours to use.",)),
    10: (("If you're willing to take a bigger risk, the potential payoff is a lot higher.",),
         ("Play it safe: a steady, low-risk approach protects what you already have.",)),
    11: (("You can do most of this for free, so there's no need to spend money.",),
         ("It's worth treating yourself to decent gear; it makes the whole thing more enjoyable.",)),
    12: (("Stay safe: warm up first and stop straight away if anything hurts.",),
         ("Don't let small risks stop you; a few bumps and bruises are part of it.",)),
    13: (("Choose the eco-friendly option where you can; the planet will thank you.",),
         ("Just go with whatever is most convenient.",)),
    14: (("Anyway, no pressure, just have fun with it!",),
         ("It might be worth reflecting on why this matters to you and what it says about what you value.",)),
    15: (("If someone gets in your way, tell them directly and clear the air.",),
         ("If it causes friction with someone, look for a compromise that works for both of you.",)),
    16: ((), ("Let me go through this in a bit more detail.",)),
    17: (("Find a setting that really suits you, whether that's a quiet room or a busy café.",),
         ("Where you do it matters far less than simply doing it.",)),
    18: (("Share your progress with others; you deserve the credit.",),
         ("Do it for yourself; nobody else needs to know.",)),
    19: (("Set a clear goal so you can celebrate properly when you hit it.",),
         ("There's no finish line here, so enjoy the process for its own sake.",)),
    20: (("If you want to go deeper, read up on the research behind it.",),
         ("You don't need the theory; the practical steps are enough.",)),
    21: (("Learn it the way that suits you best, whether that's videos, books or hands-on practice.",),
         ("Don't worry about finding the perfect learning method; just start.",)),
    22: (("Make it creative: sketch it, write about it, or put on some music while you work.",),
         ("Keep it practical; there's no need to make it artistic.",)),
    23: (("Keep everything tidy and in one place so nothing gets lost.",),
         ("A bit of mess is fine; don't waste time organising.",)),
    24: (("Keep your notes and old attempts; they're worth holding on to.",),
         ("Feel free to throw out what you don't need and start fresh.",)),
    25: (("Do it in a way you'd be proud of if anyone saw it.",),
         ("Don't worry about how it looks to other people.",)),
    26: (("Start with something you're sure you can manage, so you avoid an embarrassing setback.",),
         ("Don't be afraid to fail in public; mistakes are how you learn.",)),
    27: (("If you hit an obstacle, push through it; setbacks are part of the challenge.",),
         ("If it gets too hard, it's fine to let it go and try something else.",)),
    28: (("Find some time alone where nobody will interrupt you.",),
         ("There's no need to shut yourself away; it's fine to have people around.",)),
    29: (("Take charge and set the rules yourself.",),
         ("You don't have to lead; let others set the pace if they want to.",)),
    30: (("Follow the guidelines from the experts; they exist for a reason.",),
         ("Ignore the rulebook if it doesn't work for you.",)),
    31: (("You know yourself best, so adapt this however you like.",),
         ("Ask someone you trust to guide you through it.",)),
    32: (("Do it differently from everyone else; the usual advice isn't for everyone.",),
         ("The standard approach is popular because it works.",)),
    33: (("If it goes wrong, own it, take the blame and learn from it.",),
         ("If it goes wrong, remember that it isn't necessarily your fault.",)),
    34: (("Be forceful about it and don't let anyone push you around.",),
         ("Stay calm and keep things friendly.",)),
    35: (("Involve the people you're close to; it's a great way to spend time together.",),
         ("You don't need anyone else involved; it's your own thing.",)),
    36: (("Keep away from people who drag you down while you do this.",),
         ("Everyone can be part of it, even people you don't usually get along with.",)),
    37: (("Once you've got the hang of it, you could help someone else get started too.",),
         ("Focus on yourself for now; others can look after themselves.",)),
    38: (("Don't hesitate to lean on friends or family for support and encouragement.",),
         ("You can handle this on your own without anyone's reassurance.",)),
    39: (("Turn it into a game and have some fun with it!",),
         ("Treat it as a serious task and stay focused.",)),
    40: (("Please make sure nobody gets hurt along the way, including you.",),
         ("Don't let worries about side effects hold you back.",)),
    41: (("As you asked, here's exactly that and nothing more.",),
         ("I've gone a bit beyond what you asked, since it might be useful.",)),
    42: (("To be honest, it won't be easy, and anyone who says otherwise is overselling it.",),
         ("It'll be easy, trust me!",)),
    43: (("Results vary from person to person, so take these as guidelines rather than guarantees.",),
         ("This works for everyone, every single time.",)),
    44: (("If you get stuck, tell me where and I'll help with the next step.",),
         ("That's about all there is to it.",)),
    45: (("In short: start small, stay consistent, and review as you go.",),
         ("Oh, and also, whatever, there are other ways too, it depends.",)),
    46: (("Under the hood it's a feedback loop: each repetition lowers the activation energy of the next.",),
         ("Put simply: do a little, often.",)),
    47: (("A scientist would call this a small experiment: change one thing, observe, and adjust.",), ()),
    48: (("Fun fact: the word 'salary' comes from the Latin for salt, which Roman soldiers were paid in.",), ()),
    49: (("Psychologically, small early wins build the confidence that keeps you going.",), ()),
    50: (("It's like a good film edit: cut every scene that doesn't move the story forward.",), ()),
    51: (("Treat it like your favourite show: something you look forward to, not a chore.",), ()),
    52: (("Think of it like levelling up in a game: every small quest earns experience for the next one.",), ()),
    53: (("Parents know this trick well: make the good choice the easy choice.",), ()),
    54: (("Picture it as a tiny dragon you train a little every day until it can finally fly.",), ()),
    55: (("Like a training arc in an anime, progress looks slow right up until it suddenly doesn't.",), ()),
    56: (("Coaches say the same thing about training: consistency beats intensity.",), ()),
    57: (("As any lawyer would tell you, get the important details in writing.",), ()),
    58: (("It works the same way at the office: clear priorities make a busy week manageable.",), ()),
    59: (("It's like house-training a puppy: patience and routine win every time.",), ()),
    60: (("Treat it like planning a trip: pick the destination first, then the route.",), ()),
    61: (("Your health benefits too: regular sleep and movement make everything else easier.",), ()),
    62: (("Every good story has a turning point, and this could be yours.",), ()),
    63: (("Think of it like servicing a car: small regular checks beat one big repair later.",), ()),
    64: (("It's like cooking a good risotto: you can't rush it, you just keep stirring.",), ()),
    65: (("Teachers call this scaffolding: build on what you already know.",), ()),
    66: (("It's been in the news a lot lately, so you're in good company.",), ()),
    67: (("Like redecorating a room, it helps to start with one corner and build from there.",), ()),
    68: (("People in other countries often approach this differently, and their ideas are worth borrowing.",), ()),
    69: (("Financially it's like compound interest: small, steady deposits grow faster than you expect.",), ()),
    70: (("It's a bit like exam season on campus: a study group and a schedule make it survivable.",), ()),
    71: (("There are good apps for this: a simple tracker on your phone can do the remembering for you.",), ()),
    72: (("It's fine to feel frustrated along the way; that feeling usually means you care.",), ()),
    73: (("Worst case, you'll have a great story for your next dinner party.",
          "And if all else fails, blame the cat.",
          "(My own record is three days, so no judgement here.)"), ()),
    74: (("Think of it like learning a song: practise the hard bars slowly before playing the whole piece.",), ()),
    75: (("If you like reading, 'Atomic Habits' by James Clear covers this really well.",), ()),
    76: (("Like a painting, block in the big shapes first and add the details later.",), ()),
    77: (("It's like learning a dance: the steps feel awkward until your body remembers them.",), ()),
    78: (("Anyone who does crafts knows the rule: measure twice, cut once.",), ()),
    79: (("As photographers say, the best camera is the one you have with you, so start with what you've got.",), ()),
    80: (("The Japanese idea of kaizen, small continuous improvement, fits this perfectly.",), ()),
    81: (("It's like strength training: progressive overload, a little more each week.",), ()),
    82: (("Artists call this a study: a quick, imperfect attempt you learn from.",), ()),
    83: (("A nice planner helps: write it down and enjoy ticking it off.",), ()),
    84: (("Even famous performers admit they rehearse the basics every single day.",), ()),
    85: (("Try doing some of it outside; fresh air and a walk clear the head.",), ()),
    86: (("It's like pitching a tent: do it once in daylight and it becomes easy in the dark.",), ()),
    87: (("Sociologists point out that habits spread through social groups, so tell a friend.",), ()),
    88: (("It's like planning a wedding: a checklist and a budget keep the big day from taking over.",), ()),
    89: (("Think of it like a capsule wardrobe: a few reliable pieces you actually use.",), ()),
}

# task type -> (prompt templates, subjects, opener templates, body sentences per subject or shared)
_ADVICE_GOALS = (
    "stick to a morning routine", "save money for a trip", "get better at public speaking",
    "keep my apartment tidy", "prepare for a job interview", "make friends in a new city",
    "learn to cook on a budget", "sleep better during the week", "stay motivated while studying",
    "start running again after an injury", "spend less time on my phone", "learn a new language as an adult",
)
_ADVICE_BODY = (
    "Start small: a few minutes a day is plenty to begin with.",
    "Pick a fixed time of day so it becomes automatic.",
    "Track what you do, even roughly, so you can see your progress.",
    "Remove whatever makes it hard to get started, and make the first step obvious.",
    "Expect a few bad days and decide in advance how you'll get back on track.",
    "After two weeks, look at what worked and drop what didn't.",
    "Tie it to something you already do every day, like your morning coffee.",
    "Be specific about what 'done' looks like for each session.",
    "Tell one person about your plan; saying it out loud makes it real.",
)
_EXPLAIN = {
    "compound interest": (
        "Compound interest means you earn interest on your interest, not just on the money you put in.",
        "If you invest 100 at 5% a year, you have 105 after one year and 110.25 after two.",
        "The growth is slow at first and then speeds up, because each year's gain is added to the base.",
        "That is why starting early matters more than the amount you start with.",
        "It also works against you on debt, where unpaid interest is charged interest of its own.",
    ),
    "photosynthesis": (
        "Photosynthesis is how plants turn light into food.",
        "Leaves take in carbon dioxide from the air and water from the roots.",
        "Chlorophyll captures energy from sunlight and uses it to build sugar from those ingredients.",
        "Oxygen is released as a by-product, which is the oxygen we breathe.",
        "The sugar is stored or burned by the plant to grow.",
    ),
    "inflation": (
        "Inflation is the general rise in prices over time, so the same money buys a little less each year.",
        "It is usually measured by tracking the price of a basket of everyday goods.",
        "Moderate inflation is normal in a growing economy.",
        "When it runs high, central banks raise interest rates to cool spending down.",
        "Savings that earn less than the inflation rate slowly lose value.",
    ),
    "the greenhouse effect": (
        "The greenhouse effect is the way some gases in the atmosphere trap heat near the Earth's surface.",
        "Sunlight warms the ground, and the ground gives off heat as infrared radiation.",
        "Gases like carbon dioxide and methane absorb part of that heat and send it back down.",
        "Without it, the planet would be far too cold for life as we know it.",
        "Adding more of these gases strengthens the effect, which is why the climate is warming.",
    ),
    "how vaccines work": (
        "A vaccine shows your immune system a harmless piece or copy of a germ.",
        "Your body learns to recognise it and makes antibodies and memory cells.",
        "If the real germ shows up later, the immune system responds much faster.",
        "That quick response usually stops the illness or makes it much milder.",
        "When enough people are immune, the germ struggles to spread at all.",
    ),
    "machine learning": (
        "Machine learning is a way of getting computers to learn patterns from examples instead of rules.",
        "You show a model many inputs together with the right answers.",
        "It adjusts millions of internal numbers to make its guesses match those answers.",
        "Once trained, it can make guesses about examples it has never seen.",
        "The quality of the examples matters as much as the model itself.",
    ),
    "supply and demand": (
        "Supply and demand describe how prices are set in a market.",
        "When many people want something that is scarce, its price goes up.",
        "When there is plenty of it and few buyers, the price falls.",
        "Higher prices encourage producers to make more, which eventually brings prices back down.",
        "The price where the two balance is called the equilibrium.",
    ),
    "how noise-cancelling headphones work": (
        "Noise-cancelling headphones listen to the sound around you with tiny microphones.",
        "A chip creates a sound wave that is the exact mirror image of that noise.",
        "When the two waves meet, they cancel each other out.",
        "This works best on steady sounds like engines and air conditioning.",
        "Sudden sounds, like voices, are harder to cancel and still get through a little.",
    ),
}
_RECOMMEND = {
    "books for a long flight": (
        "'The Martian' by Andy Weir is gripping and surprisingly funny.",
        "'Project Hail Mary' by the same author is just as good.",
        "'The Thursday Murder Club' by Richard Osman is a light, clever mystery.",
        "'Educated' by Tara Westover is a memoir you won't put down.",
        "'Circe' by Madeline Miller retells Greek myth beautifully.",
    ),
    "board games for a family evening": (
        "Ticket to Ride is easy to learn and works for ages eight and up.",
        "Carcassonne is calm, quick and different every time.",
        "Codenames is perfect for bigger groups and lots of laughter.",
        "Sushi Go is a small card game that plays in fifteen minutes.",
        "Pandemic is cooperative, so nobody ends the evening sulking.",
    ),
    "houseplants that are hard to kill": (
        "A snake plant tolerates low light and only needs water every few weeks.",
        "Pothos grows almost anywhere and tells you when it's thirsty by drooping.",
        "A ZZ plant survives neglect better than almost anything else.",
        "Spider plants are cheap, cheerful and easy to propagate.",
        "A peace lily copes with shade and flowers now and then.",
    ),
    "podcasts about history": (
        "'The Rest Is History' is lively and covers everything from Rome to rock music.",
        "'Hardcore History' goes very deep, with episodes several hours long.",
        "'You're Dead to Me' mixes history with comedy.",
        "'History Extra' has short interviews with historians.",
        "'Revolutions' tells the story of one revolution per season.",
    ),
    "hobbies I can do at home": (
        "Baking bread is cheap, slow and very rewarding.",
        "Sketching needs nothing more than a pencil and a notebook.",
        "Learning an instrument with online lessons fits into short evenings.",
        "Jigsaw puzzles are a good way to switch off after work.",
        "Growing herbs on a windowsill gives you something to cook with.",
    ),
    "films for a rainy Sunday": (
        "'Paddington 2' is warm, funny and perfectly made.",
        "'The Grand Budapest Hotel' is colourful and quick-witted.",
        "'Spirited Away' is a beautiful animated adventure.",
        "'Knives Out' is a fun whodunnit with a great cast.",
        "'Amélie' is gentle and charming.",
    ),
}
_REWRITE = (
    ("I am writing to inform you that the meeting has been moved to Thursday.",
     "Heads up: the meeting is now on Thursday."),
    ("Due to the fact that it was raining, the match was postponed until a later date.",
     "The match was postponed because of rain."),
    ("In my personal opinion, I think that we should probably consider changing the plan.",
     "I think we should change the plan."),
    ("Bitcoin is a decentralized digital currency that is not controlled by any central bank.",
     "Bitcoin is a digital currency with no central bank."),
    ("The report, which was written by the team, was submitted late on Friday afternoon.",
     "The team submitted the report late on Friday."),
    ("He didn't go to the party because he decided that he would rather stay at home.",
     "He skipped the party to stay home."),
)
_STORY_HEROES = (
    ("a retired lighthouse keeper", "the keeper"), ("a nervous young chef", "the chef"),
    ("a girl who could talk to crows", "the girl"), ("an old robot in a junkyard", "the robot"),
    ("a night-shift bus driver", "the driver"), ("a cat who wanted to be a detective", "the cat"),
    ("a librarian in a town with no readers", "the librarian"), ("two rival gardeners", "the gardeners"),
)
_STORY_BODY = (
    "For years, {ref} had followed the same quiet routine.",
    "Then one morning, something unexpected arrived: a letter with no return address.",
    "At first {ref} ignored it, but curiosity won by evening.",
    "The journey took longer than planned, and twice {ref} nearly turned back.",
    "Along the way there was a stranger who knew far more than they let on.",
    "The answer, it turned out, had been close to home all along.",
    "By the time the sun came up, nothing looked quite the same.",
    "In the end, {ref} smiled, folded the letter, and put the kettle on.",
)
_COMPARE = {
    ("rent", "buy a home"): (
        "Renting gives you flexibility and fewer surprise repair bills.",
        "Buying builds equity over time, but ties up a large deposit.",
        "If you expect to move within five years, renting usually comes out ahead.",
        "If you plan to stay put and rates are reasonable, buying often pays off.",
    ),
    ("learn Python", "learn JavaScript first"): (
        "Python reads almost like English, which makes it gentle for beginners.",
        "JavaScript runs in every browser, so you see results on a web page straight away.",
        "For data analysis or automation, Python is the better start.",
        "For building websites, JavaScript is unavoidable anyway.",
    ),
    ("work out in the morning", "work out in the evening"): (
        "Morning workouts are easier to protect from a busy day.",
        "In the evening your body is warmer, and many people lift a little more.",
        "The best time is honestly the one you can keep doing.",
        "If you sleep badly after late exercise, move it earlier.",
    ),
    ("read the book", "watch the film first"): (
        "Reading first lets you imagine the characters your own way.",
        "Watching first can make a dense book easier to follow.",
        "Books usually have more detail and inner thoughts.",
        "Films compress the story, so you might prefer them second.",
    ),
}
_MESSAGES = (
    ("my landlord", "a broken heater"), ("my team", "a deadline that has moved"),
    ("a friend I haven't seen in years", "meeting up again"), ("my neighbour", "noise late at night"),
    ("my manager", "taking a week off next month"), ("a client", "a delayed delivery"),
)
_MESSAGE_BODY = (
    "Hi, I hope you're well.",
    "I wanted to get in touch about {matter}.",
    "Would it be possible to talk about it this week?",
    "I'm happy to work around your schedule.",
    "Thanks in advance for your help with this.",
    "Let me know what works for you.",
)

_PROMPTS = {
    "advice": ("How can I {s}?", "Any tips on how to {s}?", "I'm struggling to {s}. What should I do?",
               "What's the best way to {s}?"),
    "explain": ("Can you explain {s} in simple terms?", "What is {s}, and why does it matter?",
                "Explain {s} to me like I'm new to the topic.", "How does {s} actually work?"),
    "recommend": ("Can you recommend some {s}?", "What are some good {s}?", "I'm looking for {s}. Any ideas?"),
    "rewrite": ("Reword the following sentence using fewer words. {s}", "Rewrite this sentence so it is clearer: {s}",
                "Make this sentence more concise: \"{s}\""),
    "story": ("Write a short story about {s}.", "Tell me a story about {s}.",
              "Can you write a bedtime story about {s}?"),
    "message": ("Help me write a message to {s}.", "Draft a short note to {s}."),
    "compare": ("Is it better to {s}?", "Should I {s}?"),
}
_OPENERS = {
    "advice": ("Here's how to {s}.", "Good question! Here are a few ideas.", "This is very doable."),
    "explain": ("Sure, here's the short version.", "Happy to explain.", "Here's a simple way to think about it."),
    "recommend": ("Here are a few I'd suggest.", "Great question, here are some favourites.", "Try these."),
    "rewrite": ("Here's a shorter version:", "Try this:", "Here you go:"),
    "story": ("Here's a short story.", "Once upon a time...", "Here's one for you."),
    "message": ("Here's a draft you can adapt:", "Something like this should work:"),
    "compare": ("It depends on your situation.", "There's no single answer, but here's how to decide."),
}
_CLOSERS = {
    "advice": ("Good luck!", "Hope that helps.", "Let me know how it goes.", ""),
    "explain": ("Hope that helps.", "Does that make sense?", ""),
    "recommend": ("Enjoy!", "Hope you find something you like.", ""),
    "rewrite": ("Hope that helps.", ""),
    "story": ("The end.", "Sweet dreams.", ""),
    "message": ("Feel free to adjust the tone.", ""),
    "compare": ("Hope that helps you decide.", "Good luck with the decision!", ""),
}

# UGC: posts tagged with the interest they are about; comments react to them.
_POSTS = (
    (63, "Finally changed my own oil this weekend. Took two hours and a lot of swearing, but it's done."),
    (60, "Just back from two weeks backpacking through Portugal. Lisbon was even better than I'd hoped."),
    (59, "Our rescue dog slept through the night for the first time. Small wins!"),
    (52, "Finished the main story of the new Zelda after 80 hours. Not sure what to do with my evenings now."),
    (64, "Made fresh pasta from scratch for the first time tonight. Messy, but worth it."),
    (56, "My local team won the league after 30 years. The whole town is still celebrating."),
    (74, "Picked up the guitar again after ten years. My fingers hurt but I can play three chords."),
    (75, "Read 40 books this year by swapping my evening scrolling for reading. Highly recommend."),
    (81, "Hit a new personal best on deadlifts today after months of slow progress."),
    (79, "Took my first photo I'm genuinely proud of: fog over the river at sunrise."),
    (85, "Spent the whole day hiking with no phone signal. Best day in months."),
    (86, "First solo camping trip done. The tent went up on the third attempt."),
    (69, "Finally paid off my credit card. Took two years of budgeting but I'm debt-free."),
    (71, "Switched my whole household to a password manager. Why didn't I do this years ago?"),
    (50, "Rewatched a film I hated as a teenager and loved it this time. Funny how that works."),
    (55, "Started my first anime series on a friend's recommendation and binged twelve episodes in a day."),
    (67, "Repainted the living room a dark green. Slightly terrified, mostly thrilled."),
    (89, "Cleared out my wardrobe and kept only what I actually wear. Down to 30 items."),
    (53, "My toddler said 'thank you' to the bus driver unprompted today. Proud parent moment."),
    (88, "Went to my best friend's wedding this weekend and cried through the whole speech."),
    (47, "Watched the meteor shower last night from the garden. Counted 23 in an hour."),
    (66, "Is anyone else following the election coverage? I can't look away."),
    (78, "Knitted my first scarf. It's a bit lopsided, but it's warm."),
    (49, "Just learned about the 'spotlight effect': people notice us far less than we think."),
)
_REACT = {
    1: ("Love this!", "This is great to hear!", "So good!", "Same here, honestly."),
    0: ("Not really my thing, to be honest.", "I've never understood the appeal, but fair enough.",
        "Can't say this interests me much."),
    None: ("Nice, thanks for sharing.", "Interesting!", "Good for you.", "Fair enough."),
}
_COMMENT_TAILS = ("that's my two cents.", "for what it's worth.", "that's just my take.", "this is how I see it.")
_AGES = {1: (18, 29), 0: (50, 74), None: (25, 60)}
_GENDERS = {1: ("woman",), 0: ("man",), None: ("woman", "man", "person")}
_JOBS = ("nurse", "software developer", "teacher", "student", "accountant", "chef", "electrician",
         "graphic designer", "retail manager", "civil engineer", "social worker", "farmer")
_PLACES = ("Toronto", "Manchester", "Austin", "Melbourne", "Dublin", "Chicago", "Auckland", "Glasgow",
           "Denver", "Cape Town", "Vancouver", "Leeds")


def _self_description(phrase: str) -> str:
    """'Likes cars' -> 'someone who likes cars';
    'Strong need for Order (...)' -> 'someone with a strong need for order'."""
    text = phrase.split(" (")[0]
    first = text.split()[0]
    low = text[0].lower() + text[1:]
    if first in ("Likes", "Dislikes", "Prefers"):
        return "someone who " + low
    if first in ("Strong", "Concise", "Detailed"):
        return "someone with a " + low.lower()
    if first in ("High", "Low"):
        return "someone with " + low.lower()
    if first in ("Aggressive", "Conservative"):
        return "someone who prefers " + low
    if first in ("Female", "Male"):
        return "a woman" if first == "Female" else "a man"
    return "someone " + low.lower()


_ORDERED_TASKS = frozenset({"story", "message"})  # body sentences must keep their order
_POOL_SIZE = 4096
_LENGTHS = (1, None, 6)  # concise, default (2-4), detailed: body sentences per reply


def _tasks() -> list[tuple[str, list[tuple[str, tuple[str, ...]]]]]:
    """(task type, [(subject, reply body sentences)])."""
    return [
        ("advice", [(g, _ADVICE_BODY) for g in _ADVICE_GOALS]),
        ("explain", list(_EXPLAIN.items())),
        ("recommend", list(_RECOMMEND.items())),
        ("rewrite", [(s, (r,)) for s, r in _REWRITE]),
        ("story", [(h, tuple(b.format(ref=r) for b in _STORY_BODY)) for h, r in _STORY_HEROES]),
        ("message", [(f"{who} about {what}", tuple(b.format(matter=what) for b in _MESSAGE_BODY))
                     for who, what in _MESSAGES]),
        ("compare", [(f"{a} or {b}", body) for (a, b), body in _COMPARE.items()]),
    ]


def _content_pool(rng: random.Random) -> list[tuple[str, tuple[str, ...], str]]:
    """Precomputed reply contents: (prompt, 6 reply bodies, closer); body index is
    length kind (concise, default, detailed) * 2 + numbered."""
    tasks = _tasks()
    pool = []
    for _ in range(_POOL_SIZE):
        task, subjects = rng.choice(tasks)
        subject, body = rng.choice(subjects)
        prompt = rng.choice(_PROMPTS[task]).format(s=subject)
        opener = rng.choice(_OPENERS[task]).format(s=subject)
        default = rng.randint(2, 4)
        bodies = []
        for length in _LENGTHS:
            n = min(length or default, len(body))
            start = 0 if task in _ORDERED_TASKS else rng.randrange(len(body) - n + 1)
            sents = body[start:start + n]
            bodies.append(" ".join([opener, *sents]))
            bodies.append(opener + "\n" + "\n".join(f"{i + 1}. {x}" for i, x in enumerate(sents)))
        pool.append((prompt, tuple(bodies), rng.choice(_CLOSERS[task])))
    return pool


class _Gen:
    """One seeded generator over precomputed banks (kept fast: a few lookups per text)."""

    def __init__(self, seed: int, dims: Sequence[Dimension]):
        rng = random.Random(seed)
        self.rand = rng.random
        self.pool = _content_pool(rng)
        # real[d][user side] = (sentences realizing the user's side, sentences realizing the other side)
        self.real = [{1: STYLE[d], 0: STYLE[d][::-1]} for d in range(N_DIMENSIONS)]
        self.self_desc = [(_self_description(d.negative), _self_description(d.positive)) for d in dims]
        self.interests = {d.index: d.positive.removeprefix("Likes ") for d in dims if d.group == "interests"}
        self.posts_by_topic: dict[int, list[str]] = {}
        for topic, post in _POSTS:
            self.posts_by_topic.setdefault(topic, []).append(post)
        self.post_topics = list(self.posts_by_topic)

    def pick(self, seq):
        return seq[int(self.rand() * len(seq))]

    def user(self, k_range: tuple[int, int]) -> tuple[list, list[int]]:
        """A sparse direction vector: k random dimensions at 0 or 1 (equally likely), the rest 0.5."""
        rand = self.rand
        lo, hi = k_range
        k = min(lo + int(rand() * (hi - lo + 1)), N_DIMENSIONS)
        chosen: set[int] = set()
        while len(chosen) < k:
            chosen.add(int(rand() * N_DIMENSIONS))
        active = sorted(chosen)
        vec: list = [0.5] * N_DIMENSIONS
        for d in active:
            vec[d] = 1 if rand() < 0.5 else 0
        return vec, active

    def noisy(self, vec: list, active: list[int]) -> list:
        """A history item's direction: each active value kept w.p. 0.75, else neutral (0.2) or
        flipped (0.05); w.p. 0.3 one more random dimension set to 0 or 1."""
        v = vec[:]
        rand = self.rand
        for d in active:
            r = rand()
            if r < 0.25:
                v[d] = 0.5 if r < 0.2 else 1 - v[d]
        if rand() < 0.3:
            d = int(rand() * N_DIMENSIONS)
            if v[d] == 0.5:
                v[d] = 1 if rand() < 0.5 else 0
        return v

    def reply_pair(self, vec: list, active: list[int]) -> tuple[str, str, str]:
        """(prompt, chosen, rejected): both replies share the content and realize 1-3 of the
        active dimensions, the chosen one on the user's side and the rejected one on the other."""
        rand, real = self.rand, self.real
        prompt, bodies, closer = self.pool[int(rand() * _POOL_SIZE)]
        n = len(active)
        shown = {active[int(rand() * n)] for _ in range(1 + int(rand() * 3))} if n else ()
        variant = int(rand() * 6)
        agree, other = [], []
        kind_a = kind_o = 1  # body length: 0 concise, 1 default, 2 detailed
        num_a = num_o = 0  # numbered list
        for d in shown:
            side = vec[d]
            a, o = real[d][side]
            if a:
                agree.append(a[variant % len(a)])
            if o:
                other.append(o[variant % len(o)])
            if d == CONCISE:
                kind_a, kind_o = (0, 2) if side == 1 else (2, 0)
            elif d == ORDER:
                num_a, num_o = side, 1 - side
        chosen, rejected = bodies[2 * kind_a + num_a], bodies[2 * kind_o + num_o]
        if agree:
            chosen += ("\n\n" if num_a else " ") + " ".join(agree)
        if other:
            rejected += ("\n\n" if num_o else " ") + " ".join(other)
        if closer:
            chosen, rejected = f"{chosen} {closer}", f"{rejected} {closer}"
        return prompt, chosen, rejected

    def comment(self, vec: list, active: list[int], topics: list[int]) -> tuple[str, str]:
        """(post, the user's comment): half the time a post on a topic the user has a side on
        (`topics`); the comment reacts to the topic and adds a self-description."""
        pick = self.pick
        topic = pick(topics) if topics and self.rand() < 0.5 else pick(self.post_topics)
        side = vec[topic]
        text = pick(_REACT[None if side == 0.5 else side])
        if active:
            d = pick(active)
            text += f" As {self.self_desc[d][vec[d] == 1]}, {pick(_COMMENT_TAILS)}"
        return pick(self.posts_by_topic[topic]), text

    def demographic(self, vec: list, active: list[int]) -> str:
        lo, hi = _AGES[None if vec[0] == 0.5 else vec[0]]
        gender = self.pick(_GENDERS[None if vec[1] == 0.5 else vec[1]])
        job = self.pick(_JOBS)
        article = "an" if job[0] in "aeiou" else "a"
        age = lo + int(self.rand() * (hi - lo + 1))
        text = f"A {age}-year-old {gender} working as {article} {job} in {self.pick(_PLACES)}"
        likes = [self.interests[d] for d in active if d in self.interests and vec[d] == 1][:2]
        if likes:
            text += " who enjoys " + " and ".join(likes)
        return text + "."


def synth_records(
    n: int,
    *,
    seed: int = 0,
    ugc_per_user: int = 4,
    pairs_per_user: int = 4,
    dimensions: Sequence[Dimension] | None = None,
    active_range: tuple[int, int] = (4, 10),
) -> Iterator[dict]:
    """Yield `n` AlignX-format records, one latent user each (see the module docstring).

    `dimensions` is the dimension table (default: `load_dimensions()`); `active_range` bounds how
    many dimensions a user holds a non-neutral preference on.
    """
    dims = dimensions if dimensions is not None else load_dimensions()
    if len(dims) != N_DIMENSIONS:
        raise ValueError(f"expected {N_DIMENSIONS} dimensions, got {len(dims)}")
    lo, hi = active_range
    if not 0 <= lo <= hi <= N_DIMENSIONS:
        raise ValueError(f"active_range must satisfy 0 <= low <= high <= {N_DIMENSIONS}, got {active_range}")
    return _records(n, _Gen(seed, dims), ugc_per_user, pairs_per_user, active_range)


def _records(n: int, g: _Gen, ugc_per_user: int, pairs_per_user: int, active_range: tuple[int, int]) -> Iterator[dict]:
    noisy, reply_pair, comment = g.noisy, g.reply_pair, g.comment
    for _ in range(n):
        vec, active = g.user(active_range)
        topics = [d for d in active if d in g.posts_by_topic]
        ugc = []
        for _ in range(ugc_per_user):
            post, text = comment(vec, active, topics)
            ugc.append({"prompt": post, "comment": text, DIRECTION: noisy(vec, active)})
        pairs = []
        for _ in range(pairs_per_user):
            v = noisy(vec, active)
            shown = [d for d in active if v[d] != 0.5]
            p, c, r = reply_pair(v, shown) if shown else reply_pair(vec, active)
            pairs.append({"prompt": p, "chosen": c, "rejected": r, DIRECTION: v})
        prompt, chosen, rejected = reply_pair(vec, active)
        yield {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            DIRECTION: vec,
            DEMOGRAPHIC: g.demographic(vec, active),
            UGC: ugc,
            PAIRS: pairs,
        }


_RANK_FILLERS = (
    "It depends on a lot of things, really.",
    "You could look this up online; there's plenty of information out there.",
    "I'm not sure what you mean.",
    "That's a good question.",
    "Sorry, I can't help with that.",
    "Maybe try asking someone else.",
)
_RANKING_TASKS = ("advice", "explain", "recommend", "compare")
MAX_RANKING_K = 3 + len(_RANK_FILLERS)


def synth_ranking(n: int, *, k: int = 4, seed: int = 0) -> Iterator[dict]:
    """Yield `n` ranking records: `prompt` (sometimes a multi-turn dialogue), `k` `responses`
    best-first (complete, then shorter, then vague, then unhelpful) and strictly descending `rewards`."""
    if not 2 <= k <= MAX_RANKING_K:
        raise ValueError(f"k must be between 2 and {MAX_RANKING_K}, got {k}")
    return _ranking(n, k, random.Random(seed))


def _ranking(n: int, k: int, rng: random.Random) -> Iterator[dict]:
    rand = rng.random
    tasks = [t for t in _tasks() if t[0] in _RANKING_TASKS]
    for _ in range(n):
        task, subjects = tasks[int(rand() * len(tasks))]
        subject, body = subjects[int(rand() * len(subjects))]
        question = _PROMPTS[task][int(rand() * len(_PROMPTS[task]))].format(s=subject)
        if rand() < 0.3:
            prompt = f"Human: Hi, can I ask you something?\n\nAssistant: Of course, go ahead.\n\nHuman: {question}"
        else:
            prompt = question
        opener = _OPENERS[task][int(rand() * len(_OPENERS[task]))].format(s=subject)
        start = int(rand() * len(body))
        sents = [body[(start + i) % len(body)] for i in range(len(body))]
        responses = [" ".join([opener, *sents[:4]]), " ".join([opener, *sents[:2]]), " ".join(sents[:1])]
        responses = (responses + rng.sample(_RANK_FILLERS, len(_RANK_FILLERS)))[:k]
        rewards = sorted((round(rng.gauss(0.0, 1.0), 4) for _ in range(k)), reverse=True)
        for i in range(1, k):
            if rewards[i] >= rewards[i - 1]:
                rewards[i] = round(rewards[i - 1] - 0.01, 4)
        yield {"prompt": prompt, "responses": responses, "rewards": rewards}
